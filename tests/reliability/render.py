# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the reliability suite's results (JSON written when its pytest session ends) as
markdown: docs/reliability.md after `make reliability`.

    python tests/reliability/render.py RESULTS.json OUT.md
"""

from __future__ import annotations

import json
import os
import re
import sys

FS_ORDER = ['ext4', 'xfs', 'btrfs']

INTRO = """\
# Reliability: faults injected, and what happened

This page is written by `make reliability` (the long form of `tests/reliability/`, which
`make test` runs in its short form); every number below was counted by that run, on real
loopback ext4, XFS and btrfs filesystems. Do not edit it by hand.

**Data lost** counts every time a check found a published snapshot incomplete or gone (other
than by the retention policy), `latest` pointing at something that is not a complete snapshot,
a `.partial` listed, linked against or made `latest`, or anything written outside src and the
snapshot root. The checks run after every injected fault and again after the next normal run:
each published snapshot is compared with a frozen copy of its source by
`rsync -aHAXn --checksum --modify-window=-1` and a walk comparing nanosecond times and owners.
"""


def _fs_key(fs):
    return (FS_ORDER.index(fs) if fs in FS_ORDER else len(FS_ORDER), fs)


def _cell(text):
    return text.replace('|', '\\|').replace('\n', ' ')


def _outcomes(counter, limit=None):
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = items[:limit] if limit else items
    out = ['%s (%d)' % (_cell(k), v) for k, v in shown]
    if limit and len(items) > limit:
        out.append('... %d more kinds, below' % (len(items) - limit))
    return '<br>'.join(out)


def render(data):
    lines = [INTRO]
    tests = data.get('tests', {})
    lines.append('Run: `%s` form, finished %s, %s s; kernel %s, Python %s; seed %s (`RELIABILITY_SEED=%s` '
                 'replays the random choices). Tests: %s.\n' % (
                     data.get('mode'), data.get('finished'), data.get('seconds'), data.get('kernel'),
                     data.get('python'), data.get('seed'), data.get('seed'),
                     ', '.join('%d %s' % (n, k) for k, n in sorted(tests.items())) or 'none'))
    if data.get('failed_tests'):
        lines.append('**Failed tests:** %s\n' % ', '.join('`%s`' % t for t in data['failed_tests']))
    faults = data.get('faults', [])
    lines.append('## Summary\n')
    lines.append('| Fault | Filesystems | Injected | Outcomes | Data lost |')
    lines.append('|---|---|---:|---|---:|')
    total_injected = total_lost = 0
    for fault in faults:
        per_fs = fault['fs']
        injected = sum(r['injected'] for r in per_fs.values())
        lost = sum(r['data_lost'] for r in per_fs.values())
        total_injected += injected
        total_lost += lost
        merged = {}
        for row in per_fs.values():
            for outcome, n in row['outcomes'].items():
                merged[outcome] = merged.get(outcome, 0) + n
        lines.append('| %s | %s | %d | %s | %d |' % (
            _cell(fault['title']), ', '.join(sorted(per_fs, key=_fs_key)), injected, _outcomes(merged, limit=6), lost))
    lines.append('| **all** | | **%d** | | **%d** |\n' % (total_injected, total_lost))

    bugs = {}
    for fault in faults:
        for row in fault['fs'].values():
            for outcome, n in row['outcomes'].items():
                for bug in re.findall(r'\b(?:bug |known bug )?([BSHMU][0-9]+[a-z/]*)\b', outcome):
                    bugs.setdefault(bug, []).append((fault['title'], outcome, n))
    if bugs:
        lines.append('## Engine bugs this run still met\n')
        lines.append('Reported with repros; each is tallied here instead of failing the run, and a '
                     'dedicated test turns green when it is fixed. None of them loses data.\n')
        for bug in sorted(bugs):
            seen = sum(n for _t, _o, n in bugs[bug])
            lines.append('- **%s** (%d times): %s' % (bug, seen, '; '.join(sorted({_cell(o) for _t, o, _n in bugs[bug]}))))
        lines.append('')

    lines.append('## Per fault and filesystem\n')
    for fault in faults:
        lines.append('### %s\n' % fault['title'])
        lines.append('| Filesystem | Outcome | Times | Data lost |')
        lines.append('|---|---|---:|---:|')
        for fs in sorted(fault['fs'], key=_fs_key):
            row = fault['fs'][fs]
            items = sorted(row['outcomes'].items(), key=lambda kv: (-kv[1], kv[0]))
            for i, (outcome, n) in enumerate(items):
                first = i == 0
                lines.append('| %s | %s | %d | %s |' % (fs if first else '', _cell(outcome), n, row['data_lost'] if first else ''))
        for note in fault.get('notes', []):
            lines.append('\n%s' % note)
        lines.append('')
    return '\n'.join(lines).rstrip() + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write('usage: render.py RESULTS.json OUT.md\n')
        return 64
    with open(argv[0], encoding='utf-8') as handle:
        data = json.load(handle)
    if os.path.dirname(argv[1]):
        os.makedirs(os.path.dirname(argv[1]), exist_ok=True)
    with open(argv[1], 'w', encoding='utf-8') as handle:
        handle.write(render(data))
    return 0


if __name__ == '__main__':
    sys.exit(main())
