# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore through its two other doors: ``fslinks-snapshot restore`` as a subprocess (a job's
root, excludes kept by --mirror, --json, --dry-run, errors) and the snapshot_restore module
through real ansible runs (check mode, diff mode, idempotence, guard)."""

from __future__ import annotations

import json
import os

from helpers import processes
from helpers.ansible_run import run_adhoc
from helpers.oracles import rsync_diff
from helpers.snapshots import Clock
from helpers.trees import copy_reference

from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run


def cli(w, *args):
    return processes.cli(w / 'etc', *args)


def _tree(src):
    (src / 'etc').mkdir(parents=True)
    (src / 'etc' / 'app.conf').write_bytes(b'good = 1\n')
    (src / 'data.bin').write_bytes(os.urandom(1 << 20))
    (src / 'cache').mkdir()
    (src / 'cache' / 'big').write_bytes(b'excluded from snapshots')


def test_cli_restore(xfs, workdir):
    w = workdir(xfs)
    src = w / 'src'
    _tree(src)
    cfg = {'name': 'data', 'src': str(src), 'dest': str(w / 'snaps'), 'exclude': ['/cache/']}
    (w / 'etc').mkdir()
    (w / 'etc' / 'data.json').write_text(json.dumps(cfg))
    assert cli(w, 'init', 'data').returncode == 0
    assert cli(w, 'run', 'data').returncode == 0
    snap = [n for n in os.listdir(w / 'snaps') if n.startswith('20') and not n.endswith('.json')][0]
    (src / 'etc' / 'app.conf').write_bytes(b'broken\n')
    (src / 'stray').write_bytes(b'not in the snapshot')

    plan = cli(w, 'restore', 'data', '--mirror', '--dry-run')
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert '*deleting   stray' in lines, lines
    assert any(line.startswith('>f') and line.endswith(' etc/app.conf') for line in lines), lines
    assert 'would restore the whole tree from snapshot %s' % snap in lines[-1]
    assert (src / 'stray').exists() and (src / 'etc' / 'app.conf').read_bytes() == b'broken\n'

    one = cli(w, 'restore', 'data', 'etc/app.conf', '--json')
    assert one.returncode == 0, one.stderr
    res = json.loads(one.stdout)
    assert res['snapshot'] == snap and res['method'] == 'reflink' and res['restored'] == 1
    assert res['guard_snapshot'] and (src / 'etc' / 'app.conf').read_bytes() == b'good = 1\n'

    whole = cli(w, 'restore', 'data', '--mirror', '--no-guard')
    assert whole.returncode == 0, whole.stderr
    assert not (src / 'stray').exists()
    assert (src / 'cache' / 'big').exists()         # excluded from the job: --mirror keeps it
    assert 'the live tree as it was' not in whole.stdout
    assert rsync_diff(w / 'snaps' / snap, src, extra=['--exclude=/cache/']) == []

    again = cli(w, 'restore', 'data', '--mirror')
    assert again.returncode == 0 and 'nothing to restore' in again.stdout, again.stdout
    # The guard taken above is listed, and 'latest' still means the snapshot of the job's run.
    listed = json.loads(cli(w, 'list', 'data', '--json').stdout)
    assert [s['guard'] for s in listed] == [False, True]

    for argv, words in ((['--snapshot', 'nonsense'], 'no such complete snapshot'),
                        (['no/such'], 'not in the snapshot'),
                        (['../../etc/shadow'], '".." is not allowed')):
        bad = cli(w, 'restore', 'data', *argv)
        assert bad.returncode == 64 and words in bad.stderr and bad.stdout == '', (argv, bad)


def test_snapshot_restore_module(xfs, workdir):
    w = workdir(xfs)
    src = w / 'src'
    _tree(src)
    root = w / 'snaps'
    clock = Clock()
    snap = run(Request(str(src), str(root)), now=clock())['snapshot']
    (src / 'etc' / 'app.conf').write_bytes(b'broken\n')
    before = w / 'before'
    copy_reference(src, before)
    args = {'root': str(root), 'path': 'etc'}

    checked = run_adhoc('fslinks.snapshots.snapshot_restore', args, check=True, diff=True)
    assert checked['changed'] and checked['guard_snapshot'] is None
    assert 'etc/app.conf' in checked['diff']['after'], checked['diff']
    assert rsync_diff(before, src) == []            # check mode changed nothing

    done = run_adhoc('fslinks.snapshots.snapshot_restore', args)
    assert done['changed'] and done['method'] == 'reflink' and done['restored'] >= 1
    assert done['guard_snapshot'] and os.path.isdir(done['guard_snapshot'])
    assert (src / 'etc' / 'app.conf').read_bytes() == b'good = 1\n'
    assert rsync_diff(before, done['guard_snapshot']) == []

    again = run_adhoc('fslinks.snapshots.snapshot_restore', args)
    assert not again['changed'] and again['guard_snapshot'] is None and again['snapshot'] == os.path.basename(snap)

    other = run_adhoc('fslinks.snapshots.snapshot_restore', dict(args, dest=str(w / 'copy')))
    assert other['changed'] and other['guard_snapshot'] is None
    assert (w / 'copy' / 'etc' / 'app.conf').read_bytes() == b'good = 1\n'

    failed = run_adhoc('fslinks.snapshots.snapshot_restore', dict(args, path='../x'))
    assert failed.get('failed') and '".." is not allowed' in failed['msg'] and 'path' in failed
