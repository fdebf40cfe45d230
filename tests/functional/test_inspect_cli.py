# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fslinks-snapshot list/du/diff/versions as subprocesses, on a real XFS loop filesystem, with
--json and the readable output; errors with clear messages and exit codes."""

import json
import os

import pytest

from helpers import processes

from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs
pytestmark = pytest.mark.loopfs
KIB = 1024


def write(path, data, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def cli(w, *args):
    return processes.cli(w / 'etc', *args)


def test_cli_list_du_diff_versions(xfs, workdir):
    w = workdir(xfs)
    src = w / 'src'
    write(src / 'all', os.urandom(256 * KIB))
    write(src / 'doc.txt', b'one\n', 1_600_000_000)
    write(src / 'cache' / 'junk', b'excluded')
    cfg = {'name': 'data', 'src': str(src), 'dest': str(w / 'snaps'), 'exclude': ['/cache/']}
    (w / 'etc').mkdir()
    (w / 'etc' / 'data.json').write_text(json.dumps(cfg))
    assert cli(w, 'init', 'data').returncode == 0
    assert cli(w, 'run', 'data').returncode == 0
    write(src / 'doc.txt', b'two, longer\n', 1_600_000_100)
    write(src / 'new', os.urandom(64 * KIB))
    time_ok = cli(w, 'run', 'data')
    assert time_ok.returncode == 0, time_ok.stderr
    names = sorted(n for n in os.listdir(w / 'snaps') if n.startswith('20') and not n.endswith('.json'))
    assert len(names) == 2

    listed = json.loads(cli(w, 'list', 'data', '--json').stdout)
    assert [s['name'] for s in listed] == names
    assert all(s['method'] == 'reflink' and s['files'] == 2 + (i == 1) for i, s in enumerate(listed)), listed
    assert listed[0]['created'].endswith('Z') and listed[0]['time'] == listed[0]['created']
    with_usage = json.loads(cli(w, 'list', 'data', '--json', '--usage').stdout)
    # all (256K) is shared with live; the 4K block of doc.txt v1 is s1's alone; new (64K) is in live.
    assert [(s['exclusive_bytes'], s['shared_bytes']) for s in with_usage] == \
        [(4 * KIB, 256 * KIB), (0, 324 * KIB)], with_usage
    table = cli(w, 'list', 'data', '--usage').stdout.splitlines()
    assert table[0].split()[:2] == ['NAME', 'TIME'] and 'EXCLUSIVE' in table[0] and len(table) == 3
    assert '4.0K' in table[1] and 'reflink' in table[1]

    du = cli(w, 'du', 'data', '--json')
    assert du.returncode == 0, du.stderr
    use = json.loads(du.stdout)
    assert use['job'] == 'data' and use['total_bytes'] == 328 * KIB and use['live'] == str(src)
    assert [s['exclusive_bytes'] for s in use['snapshots']] == [4 * KIB, 0]
    text = cli(w, 'du', 'data').stdout
    assert 'EXCLUSIVE' in text and '328.0K on disk' in text

    diff = json.loads(cli(w, 'diff', 'data', '--json').stdout)        # the two newest
    assert (diff['a'], diff['b']) == (names[0], names[1])
    assert diff['added'] == ['new'] and diff['modified'] == ['doc.txt'] and diff['deleted'] == []
    assert diff['metadata'] == ['.']
    lines = cli(w, 'diff', 'data').stdout.splitlines()
    assert '>f+++++++++ new' in lines and '>fcst...... doc.txt' in lines and '.d..t...... ./' in lines
    # Against live: the excluded cache is not "added"; nothing else changed.
    live = json.loads(cli(w, 'diff', 'data', 'latest', 'live', '--json').stdout)
    assert (live['b'], live['added'], live['modified'], live['deleted']) == ('live', [], [], []), live
    write(src / 'doc.txt', b'three\n', 1_600_000_200)
    assert json.loads(cli(w, 'diff', 'data', names[1], '--json').stdout)['modified'] == ['doc.txt']

    versions = json.loads(cli(w, 'versions', 'data', 'doc.txt', '--json').stdout)['versions']
    assert [v['snapshot'] for v in versions] == [names[0], names[1], 'live']
    assert [v['size'] for v in versions] == [4, 12, 6]
    assert 'SNAPSHOT' in cli(w, 'versions', 'data', str(src / 'doc.txt')).stdout

    # Errors: a clear message, a non-zero exit.
    bad = cli(w, 'diff', 'data', '2001-01-01T000000Z', '--json')
    assert bad.returncode == _jobs.EX_USAGE and "no snapshot '2001-01-01T000000Z'" in bad.stderr, bad
    assert bad.stdout == ''
    missing = cli(w, 'versions', 'data', 'no/such')
    assert missing.returncode == _jobs.EX_USAGE and 'no/such is in no snapshot' in missing.stderr
    escape = cli(w, 'versions', 'data', '../etc/passwd')
    assert escape.returncode == _jobs.EX_USAGE and '".." is not allowed' in escape.stderr
