# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fslinks.snapshots.snapshot_info through real ansible runs, on snapshots the engine made on a
real XFS loop filesystem: the list, usage, check mode, a leftover, errors, the README playbook."""

import os
import textwrap

import pytest

from helpers.ansible_run import run_adhoc, run_playbook
from helpers.settle import settle
from helpers.snapshots import Clock

from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

pytestmark = [pytest.mark.loopfs, pytest.mark.ansible]
KIB = 1024


@pytest.fixture
def chain(xfs, workdir):
    """Two reflink snapshots taken now: `keep` (128K) in both and live, `old` (64K) only in the
    first."""
    w = workdir(xfs)
    src, dest = w / 'src', w / 'snaps'
    src.mkdir()
    (src / 'keep').write_bytes(os.urandom(128 * KIB))
    (src / 'old').write_bytes(os.urandom(64 * KIB))
    names = [os.path.basename(run(Request(str(src), str(dest)))['snapshot'])]
    (src / 'old').unlink()
    names.append(os.path.basename(run(Request(str(src), str(dest)))['snapshot']))
    settle(dest / names[0] / 'old')
    return src, dest, names


def test_list_and_usage(chain):
    src, dest, names = chain
    res = run_adhoc('snapshot_info', {'root': str(dest)})
    assert not res['failed'] and res['changed'] is False, res
    assert res['latest'] == names[-1] and res['root'] == str(dest)
    snaps = res['snapshots']
    assert [s['name'] for s in snaps] == names
    for snap, files in zip(snaps, (2, 1)):
        assert snap['path'] == str(dest / snap['name'])
        assert snap['complete'] is True and snap['method'] == 'reflink'
        assert snap['files'] == files and snap['stats']['reflinked'] == files
        assert 0 <= snap['age_seconds'] < 600 and snap['created'].endswith('Z')
        assert 'exclusive_bytes' not in snap
    assert 'usage' not in res

    used = run_adhoc('snapshot_info', {'root': str(dest), 'usage': True}, check=True)
    assert not used['failed'] and used['changed'] is False, used
    assert [(s['exclusive_bytes'], s['shared_bytes']) for s in used['snapshots']] == \
        [(64 * KIB, 128 * KIB), (0, 128 * KIB)]
    assert used['usage']['live'] == str(src) and used['usage']['total_bytes'] == 192 * KIB
    assert used['usage']['chain_exclusive_bytes'] == 64 * KIB and used['usage']['bytes'] == 'allocated'


def test_leftover_listed_incomplete_and_errors(chain, workdir, xfs):
    _src, dest, names = chain
    (dest / (names[0] + '.partial')).mkdir()           # a run killed long ago
    res = run_adhoc('snapshot_info', {'root': str(dest), 'usage': True})
    assert not res['failed'], res
    assert [(s['name'], s['complete']) for s in res['snapshots']] == \
        [(names[0], True), (names[0] + '.partial', False), (names[1], True)]
    assert res['latest'] == names[1]
    assert 'exclusive_bytes' not in res['snapshots'][1]

    missing = run_adhoc('snapshot_info', {'root': str(dest / 'nope')})
    assert missing['failed'] and str(dest / 'nope') in missing['msg'] and 'no such file' in missing['msg'], missing
    relative = run_adhoc('snapshot_info', {'root': 'snaps'})
    assert relative['failed'] and 'absolute' in relative['msg']

    empty = workdir(xfs)
    none = run_adhoc('snapshot_info', {'root': str(empty)})
    assert not none['failed'] and none['snapshots'] == [] and none['latest'] is None


PLAYBOOK = textwrap.dedent('''\
    - name: The newest snapshot on every host is younger than a day
      hosts: all
      gather_facts: false
      tasks:
        - name: Learn about the snapshots
          fslinks.snapshots.snapshot_info:
            root: {root}
          register: snaps

        - name: Fail the host otherwise
          ansible.builtin.assert:
            that:
              - snaps.latest is not none
              - (snaps.snapshots | selectattr('complete') | last).age_seconds < 86400
            fail_msg: "newest snapshot in {root}: {{{{ snaps.latest | default('none', true) }}}}"
    ''')


def test_readme_playbook_asserts_a_young_snapshot(chain, workdir, xfs):
    _src, dest, _names = chain
    ok = run_playbook(PLAYBOOK.format(root=dest))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # An old chain (snapshots of 2026-11-21) fails the assertion, naming the snapshot.
    w = workdir(xfs)
    (w / 'src').mkdir()
    (w / 'src' / 'f').write_bytes(b'x')
    old = run(Request(str(w / 'src'), str(w / 'snaps')), now=Clock()())
    stale = run_playbook(PLAYBOOK.format(root=w / 'snaps'))
    assert stale.returncode != 0 and os.path.basename(old['snapshot']) in stale.stdout, stale.stdout
