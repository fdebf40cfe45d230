# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fslinks.snapshots.hardlink_snapshot through real ansible runs (ad-hoc and one playbook).

The engine is covered in depth by test_snapshot_engine.py; here: the arguments reach it, the
result has the documented keys, check mode and diff, failures become clean fail_json messages.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import ansible_run
from helpers.oracles import assert_same_tree, is_readonly_subvolume, rsync_diff
from helpers.snapshots import entries, latest, leftovers, snapshots
from helpers.trees import create_subvolume, make_hostile_tree

pytestmark = pytest.mark.ansible

STATS_KEYS = {'files', 'dirs', 'linked', 'reflinked', 'copied', 'bytes_copied', 'bytes_cloned',
              'symlinks', 'specials', 'hardlinks', 'changed_during_run'}
RESULT_KEYS = {'changed', 'snapshot', 'method', 'reason', 'stats', 'pruned', 'kept', 'leftovers_removed',
               'seconds'}


def snapshot(args, **kw):
    return ansible_run.run_adhoc('hardlink_snapshot', args, **kw)


def test_check_diff_run_and_plan_prune(xfs, workdir):
    """Check mode on a missing root writes nothing and plans a reflink snapshot; the real run
    makes it (hostile tree, rsync oracle); check mode with keep plans the pruning, with a diff
    of the snapshot list."""
    work = workdir(xfs)
    src = work / 'src'
    src.mkdir()
    tree = make_hostile_tree(src)
    dest = work / 'snaps'
    args = {'src': str(src), 'dest': str(dest)}

    plan = snapshot(args, check=True, diff=True)
    assert plan['failed'] is False, plan
    assert plan['changed'] is True and plan['method'] == 'reflink'
    assert not dest.exists(), 'check mode created the snapshot root'
    new = os.path.basename(plan['snapshot'])
    assert plan['diff']['before'] == '' and plan['diff']['after'] == new + '\n', plan['diff']
    assert plan['stats']['files'] == tree.files and plan['stats']['reflinked'] > 0

    res = snapshot(args)
    assert res['failed'] is False, res
    assert RESULT_KEYS <= set(res), set(res)
    assert STATS_KEYS <= set(res['stats']), res['stats']
    assert res['changed'] is True and res['method'] == 'reflink'
    assert res['stats']['copied'] == 0 and res['stats']['bytes_cloned'] > 0
    assert res['kept'] == [res['snapshot']] and res['pruned'] == [] and res['leftovers_removed'] == []
    assert isinstance(res['seconds'], float)
    first = os.path.basename(res['snapshot'])
    assert latest(dest) == first
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    assert_same_tree(src, res['snapshot'])
    for key in ('files', 'dirs', 'symlinks', 'specials', 'hardlinks', 'reflinked'):
        assert plan['stats'][key] == res['stats'][key], key

    before = entries(dest)
    plan = snapshot(dict(args, keep={'last': 1}), check=True, diff=True)
    assert plan['failed'] is False, plan
    assert entries(dest) == before, 'check mode wrote something'
    new = os.path.basename(plan['snapshot'])
    assert new != first
    assert plan['pruned'] == [res['snapshot']]
    assert plan['diff']['before'] == first + '\n'
    assert plan['diff']['after'] == new + '\n'


def test_btrfs_auto_and_prune_only(btrfs, workdir):
    work = workdir(btrfs)
    src = create_subvolume(work / 'src')
    (src / 'f').write_bytes(b'data')
    dest = work / 'snaps'
    args = {'src': str(src), 'dest': str(dest), 'exclude': ['*.tmp']}
    (src / 'x.tmp').write_bytes(b'tmp')
    res = snapshot(args)
    assert res['failed'] is False, res
    assert res['method'] == 'btrfs'
    s = Path(res['snapshot'])
    assert is_readonly_subvolume(s) and not (s / 'x.tmp').exists() and (s / 'f').exists()
    second = snapshot(args)
    assert second['failed'] is False, second

    pruned = snapshot(dict(args, state='pruned', keep={'last': 1}), diff=True)
    assert pruned['failed'] is False, pruned
    assert pruned['changed'] is True
    assert pruned['pruned'] == [res['snapshot']] and pruned['kept'] == [second['snapshot']]
    for key in ('snapshot', 'method', 'reason'):
        assert key not in pruned, key
    assert snapshots(dest) == [os.path.basename(second['snapshot'])]
    assert latest(dest) == os.path.basename(second['snapshot'])


@pytest.mark.parametrize('case', ['reflink-on-ext4', 'src-missing', 'dest-inside-src'])
def test_failures_are_clean(case, ext4, workdir):
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'x' * 10000)
    dest = work / 'snaps'
    args, msg = {
        'reflink-on-ext4': ({'src': str(src), 'dest': str(dest), 'method': 'reflink'},
                            'filesystem does not support reflink'),
        'src-missing': ({'src': str(work / 'nope'), 'dest': str(dest)}, 'no such file or directory'),
        'dest-inside-src': ({'src': str(src), 'dest': str(src / 'snaps')}, 'exclude it'),
    }[case]
    res = snapshot(args)
    assert res['failed'] is True, res
    assert msg in res['msg'], res['msg']
    assert 'Traceback' not in res.get('module_stderr', '') and 'module_stdout' not in res, res
    for d in (dest, src / 'snaps'):
        assert snapshots(d) == []


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    src: {src}
    dest: {dest}
  tasks:
    - name: Five snapshots with edits in between, keeping the last 3
      ansible.builtin.include_tasks: {tasks}
      loop: [0, 1, 2, 3, 4]
      loop_control:
        loop_var: round

    - name: What is there now
      ansible.builtin.find:
        paths: "{{{{ dest }}}}"
        file_type: directory
        patterns: '????-??-??T??????Z*'
        use_regex: false
      register: found

    - name: Exactly 3 snapshots, the newest is latest, the 2 oldest were pruned
      ansible.builtin.assert:
        that:
          - found.matched == 3
          - (made | length) == 5
          - lookup('ansible.builtin.pipe', 'readlink ' ~ dest ~ '/latest') == (made[-1] | basename)
          - pruned_all == made[:2]
          - last.kept == made[2:]
          - last.method == 'hardlink'
          - last.stats.linked >= 1
"""

TASKS = """
- name: Edit the source
  ansible.builtin.copy:
    dest: "{{ src }}/round-{{ round }}.txt"
    content: "round {{ round }}\\n"
    mode: "0640"

- name: Snapshot
  fslinks.snapshots.hardlink_snapshot:
    src: "{{ src }}"
    dest: "{{ dest }}"
    keep: {last: 3}
    exclude: ['*.tmp', '/cache/']
  register: last

- name: Remember
  ansible.builtin.set_fact:
    made: "{{ (made | default([])) + [last.snapshot] }}"
    pruned_all: "{{ (pruned_all | default([])) + last.pruned }}"
"""


def test_playbook_five_snapshots_keep_three(ext4, workdir, tmp_path):
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    (src / 'base.txt').write_text('base\n')
    (src / 'junk.tmp').write_text('junk\n')
    (src / 'cache').mkdir()
    (src / 'cache' / 'c').write_text('cache\n')
    dest = work / 'snaps'
    tasks = tmp_path / 'round.yml'
    tasks.write_text(TASKS)
    proc = ansible_run.run_playbook(PLAYBOOK.format(src=src, dest=dest, tasks=tasks))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = snapshots(dest)
    assert len(names) == 3 and latest(dest) == names[-1]
    assert leftovers(dest) == []
    newest = dest / names[-1]
    assert not (newest / 'junk.tmp').exists() and not (newest / 'cache').exists()
    assert sorted(os.listdir(newest)) == ['base.txt'] + ['round-%d.txt' % i for i in range(5)]
    # Unchanged files are hard links shared by all three snapshots.
    inodes = {os.stat(dest / n / 'base.txt').st_ino for n in names}
    assert len(inodes) == 1
    assert rsync_diff(src, newest, extra=['--exclude=*.tmp', '--exclude=/cache/', '--delete']) == []
