# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile arguments for every module, through real ansible-playbook runs: wrong types, empty
strings, relative paths, '..' segments, newlines, NUL bytes, lone surrogates (what JSON can
carry of invalid UTF-8), huge counts, unknown methods, dest inside src...

All cases run in one playbook (ignore_errors), each in its own sandbox directory.  Every case
must fail with a message that says what is wrong (no traceback, no "MODULE FAILURE"), and
write nothing: the fence around the sandboxes is byte for byte the same afterwards.
"""

from __future__ import annotations

import os
import re

import pytest

from helpers.ansible_run import run_tasks
from helpers.faults import TALLY
from helpers.oracles import tree_state

BIG = 10 ** 30


def _cases(sb):
    """(module, id, args, words expected in msg) - sb(name) is a sandbox path."""
    src, dest, f, fifo = sb('src'), sb('snaps'), sb('src/file'), sb('fifo')
    snap = 'hardlink_snapshot'
    rc = 'reflink_copy'
    lf = 'link_facts'
    return [
        # hardlink_snapshot
        (snap, 'no src', {'dest': dest}, 'missing required arguments: src'),
        (snap, 'empty src', {'src': '', 'dest': dest}, 'src must be'),
        (snap, 'empty dest', {'src': src, 'dest': ''}, 'dest must be'),
        (snap, 'relative src', {'src': 'relative/src', 'dest': dest}, 'src must be an absolute path'),
        (snap, 'relative dest', {'src': src, 'dest': 'snaps'}, 'dest must be an absolute path'),
        (snap, 'relative dotdot', {'src': '../../etc', 'dest': dest}, 'src must be an absolute path'),
        (snap, 'dest is src by dotdot', {'src': src, 'dest': src + '/sub/..'}, 'same directory'),
        (snap, 'dest inside src', {'src': src, 'dest': src + '/snaps'}, 'is inside src'),
        (snap, 'dest inside src by dotdot', {'src': src, 'dest': sb('x/../src/snaps')}, 'is inside src'),
        (snap, 'src is /', {'src': '/', 'dest': dest}, 'is inside src /'),
        (snap, 'src inside dest', {'src': src, 'dest': sb('')}, 'inside the snapshot root'),
        (snap, 'src missing', {'src': sb('nope'), 'dest': dest}, 'no such file or directory'),
        (snap, 'src is a file', {'src': f, 'dest': dest}, 'is not a directory'),
        (snap, 'src is a fifo', {'src': fifo, 'dest': dest}, 'is not a directory'),
        (snap, 'dest under a file', {'src': src, 'dest': sb('plain/snaps')}, 'not a directory'),
        (snap, 'src with newline', {'src': sb('new\nline'), 'dest': dest}, 'no such file or directory'),
        (snap, 'src with NUL', {'src': src + '\u0000x', 'dest': dest}, 'NUL'),
        (snap, 'dest with NUL', {'src': src, 'dest': dest + '\u0000'}, 'NUL'),
        (snap, 'keep not a dict', {'src': src, 'dest': dest, 'keep': 'forever'}, 'dictionary requested'),
        (snap, 'keep list', {'src': src, 'dest': dest, 'keep': [1, 2]}, 'keep'),
        (snap, 'keep string count', {'src': src, 'dest': dest, 'keep': {'last': 'many'}}, 'last'),
        (snap, 'keep float', {'src': src, 'dest': dest, 'keep': {'daily': 1.5}}, 'daily'),
        (snap, 'keep negative', {'src': src, 'dest': dest, 'keep': {'last': -1}}, 'negative'),
        (snap, 'keep huge', {'src': src, 'dest': dest, 'keep': {'hourly': BIG}}, 'too large'),
        (snap, 'keep 10^6', {'src': src, 'dest': dest, 'keep': {'yearly': 10 ** 6}}, 'too large'),
        (snap, 'keep unknown rule', {'src': src, 'dest': dest, 'keep': {'dayly': 3}}, 'dayly'),
        (snap, 'keep all zero', {'src': src, 'dest': dest, 'keep': {'last': 0, 'daily': 0}}, 'every count is 0'),
        (snap, 'method unknown', {'src': src, 'dest': dest, 'method': 'zfs'}, 'method'),
        (snap, 'method empty', {'src': src, 'dest': dest, 'method': ''}, 'method'),
        (snap, 'method btrfs on ext4', {'src': src, 'dest': dest, 'method': 'btrfs'}, 'not the root of a btrfs subvolume'),
        (snap, 'method reflink on ext4', {'src': src, 'dest': dest, 'method': 'reflink'}, 'does not support reflink'),
        (snap, 'exclude matches nothing', {'src': src, 'dest': dest, 'exclude': ['/']}, 'matches nothing'),
        (snap, 'exclude bad range', {'src': src, 'dest': dest, 'exclude': ['[z-a]']}, 'exclude'),
        (snap, 'exclude empty set', {'src': src, 'dest': dest, 'exclude': ['[]']}, 'exclude'),
        (snap, 'lock_timeout negative', {'src': src, 'dest': dest, 'lock_timeout': -1}, 'lock_timeout'),
        (snap, 'lock_timeout text', {'src': src, 'dest': dest, 'lock_timeout': 'soon'}, 'lock_timeout'),
        (snap, 'one_file_system maybe', {'src': src, 'dest': dest, 'one_file_system': 'maybe'}, 'one_file_system'),
        (snap, 'state absent', {'src': src, 'dest': dest, 'state': 'absent'}, 'state'),
        (snap, 'unknown option', {'src': src, 'dest': dest, 'hooks': 'rm -rf /'}, 'hooks'),
        # reflink_copy
        (rc, 'no dest', {'src': f}, 'missing required arguments: dest'),
        (rc, 'empty src', {'src': '', 'dest': sb('copy')}, 'src must be'),
        (rc, 'empty dest', {'src': f, 'dest': ''}, 'dest must'),
        (rc, 'relative src', {'src': 'file', 'dest': sb('copy')}, 'src must be an absolute path'),
        (rc, 'relative dest', {'src': f, 'dest': 'copy'}, 'dest must be an absolute path'),
        (rc, 'dest /', {'src': f, 'dest': '/'}, 'dest must name a file or directory'),
        (rc, 'dest dotdot', {'src': f, 'dest': sb('x/..')}, 'dest must name a file or directory'),
        (rc, 'dest dot', {'src': f, 'dest': sb('.')}, 'dest must name a file or directory'),
        (rc, 'dest is src', {'src': f, 'dest': sb('src/../src/file')}, 'same file'),
        (rc, 'tree into itself', {'src': src, 'dest': src + '/copy'}, 'is inside src'),
        (rc, 'tree onto a file', {'src': src, 'dest': f}, 'exists and is not one'),
        (rc, 'file onto a dir', {'src': f, 'dest': src}, 'is a directory'),
        (rc, 'src missing', {'src': sb('nope'), 'dest': sb('copy')}, 'no such file or directory'),
        (rc, 'src fifo', {'src': fifo, 'dest': sb('copy')}, 'neither a regular file nor a directory'),
        (rc, 'dest parent missing', {'src': f, 'dest': sb('no/such/dir/copy')}, 'no such file or directory'),
        (rc, 'src with NUL', {'src': f + '\u0000', 'dest': sb('copy')}, 'NUL'),
        (rc, 'dest with NUL', {'src': f, 'dest': sb('copy\u0000')}, 'NUL'),
        (rc, 'reflink sometimes', {'src': f, 'dest': sb('copy'), 'reflink': 'sometimes'}, 'reflink'),
        (rc, 'reflink always on ext4', {'src': f, 'dest': sb('copy'), 'reflink': 'always'}, 'does not support reflink'),
        (rc, 'preserve acls', {'src': f, 'dest': sb('copy'), 'preserve': ['acls']}, 'preserve'),
        (rc, 'preserve dict', {'src': f, 'dest': sb('copy'), 'preserve': {'mode': True}}, 'preserve'),
        (rc, 'force maybe', {'src': f, 'dest': sb('copy'), 'force': 'maybe'}, 'force'),
        (rc, 'backup 2', {'src': f, 'dest': sb('copy'), 'backup': 2}, 'backup'),
        (rc, 'unknown option', {'src': f, 'dest': sb('copy'), 'owner': 'root'}, 'owner'),
        # link_facts
        (lf, 'compare single', {'compare': [[f]]}, 'pair'),
        (lf, 'compare triple', {'compare': [[f, f, f]]}, 'pair'),
        (lf, 'compare numbers', {'compare': [[1, 2]]}, 'pair'),
        (lf, 'compare empty strings', {'compare': [['', '']]}, 'pair'),
        (lf, 'compare missing', {'compare': [[f, sb('nope')]]}, 'no such file or directory'),
        (lf, 'compare dirs', {'compare': [[src, src]]}, 'not a regular file'),
        (lf, 'compare fifo', {'compare': [[fifo, f]]}, 'not a regular file'),
        (lf, 'compare NUL', {'compare': [[f, f + '\u0000']]}, 'NUL'),
        (lf, 'paths NUL', {'paths': [sb('\u0000')]}, 'NUL'),
        (lf, 'probe maybe', {'probe': 'maybe'}, 'probe'),
        (lf, 'unknown option', {'path': f}, 'path'),
    ]


def _clear(status, result, words):
    """None if RESULT is a clear failure (naming WORDS), else what is wrong with it."""
    msg = result.get('msg') or ''
    if status != 'FAILED':
        return 'did not fail'
    if 'MODULE FAILURE' in msg or 'Module failed' in msg or 'Traceback' in msg:
        return 'crashed instead of a message: %s' % msg.splitlines()[0] if msg else 'crashed'
    if words and words.lower() not in msg.lower():
        return 'message does not say %r: %s' % (words, msg)
    return None


KNOWN = [
    (re.compile(r'NUL|exclude (bad range|empty set)'), 'B6'),
    # ansible-core's own argument validation crashes on a list given for a dict with options
    # (parameters.py set_fallbacks: "argument of type 'int' is not iterable"): upstream.
    (re.compile(r'keep list'), 'U1 (ansible-core)'),
]


@pytest.mark.ansible
def test_hostile_module_arguments(ext4, workdir):
    fence = workdir(ext4)
    outside = fence / 'outside'
    outside.mkdir()
    (outside / 'sentinel').write_bytes(b'sentinel')
    cases = []
    tasks = []
    for n in range(len(_cases(str))):
        sandbox = fence / ('case-%02d' % n)
        (sandbox / 'src' / 'sub').mkdir(parents=True)
        (sandbox / 'src' / 'file').write_bytes(b'data\n')
        (sandbox / 'plain').write_bytes(b'a file\n')
        os.mkfifo(sandbox / 'fifo')
        module, cid, args, words = _cases(lambda p, s=sandbox: os.path.join(str(s), p))[n]
        cases.append((module, cid, args, words, sandbox))
        tasks.append({'name': '%s: %s' % (module, cid), 'fslinks.snapshots.' + module: args, 'ignore_errors': True})
    before = tree_state(fence)
    results = run_tasks(tasks, timeout=900)
    assert len(results) == len(cases), (len(results), len(cases))
    after = tree_state(fence)
    problems = []
    for (module, cid, args, words, sandbox), (status, result) in zip(cases, results):
        what = _clear(status, result, words)
        known = next((bug for pattern, bug in KNOWN if pattern.search(cid)), None)
        changed = sorted(os.fsdecode(k) for k in set(before) | set(after)
                         if k.startswith(os.fsencode(sandbox.name)) and before.get(k) != after.get(k))
        if changed:
            what = (what + '; ' if what else '') + 'wrote %s' % changed[:3]
        if what is None:
            outcome = 'failed clearly, nothing written'
        elif known and 'crashed' in what and not changed:
            outcome = 'failed with an untyped exception (bug %s), nothing written' % known
        else:
            outcome = 'NOT CLEAR: ' + what
            problems.append('%s %s: %s (status %s)' % (module, cid, what, status))
        print('%-18s %-28s %-8s %s | %s' % (module, cid, status, outcome, (result.get('msg') or '').replace('\n', '\\n')[:150]))
        TALLY.record('hostile-module-args', 'ext4', '%s: %s' % (module, outcome), lost=1 if changed else 0)
    outside_changed = [k for k in set(before) | set(after) if k.startswith(b'outside') and before.get(k) != after.get(k)]
    assert not outside_changed
    assert not problems, '\n'.join(problems)
